-- Consent records (`personal_data::ConsentRecord`), one per person and data agreement, under
-- the person's pseudonym: no personal ID in clear.
CREATE TABLE consents (
    subject text COLLATE "C" NOT NULL,
    agreement text COLLATE "C" NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (subject, agreement)
);
