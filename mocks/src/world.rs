//! What the mock agencies share: the directory, the population database, the clock, and the
//! settings a run was started with.

use std::sync::Mutex;
use std::time::Duration;

use jiff::civil::Date;
use jiff::tz::{Offset, TimeZone};

use crate::directory::Directory;
use crate::population::Population;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Delay before a household head with `auto` consent answers.
    pub consent_delay: Duration,
    /// How many status polls an under-6 card application answers `processing` before it is issued.
    pub card_ready_after_polls: u32,
    /// A fixed "today", for reproducible tests; `None` uses the date in Vietnam.
    pub today: Option<Date>,
}

#[derive(Debug)]
pub struct World {
    pub directory: Directory,
    pub population: Mutex<Population>,
    pub settings: Settings,
    /// Bearer token the agencies present when they call civicflow back; civicflow issues it
    /// (role `agency:<id>`), and a test may set it after the mocks have started.
    pub callback_token: Mutex<Option<String>>,
    /// Draws serial numbers (personal IDs, social-insurance numbers); seeded for reproducibility.
    pub rng: Mutex<fastrand::Rng>,
    pub http: reqwest::Client,
}

impl World {
    pub fn new(
        directory: Directory,
        population: Population,
        settings: Settings,
        callback_token: Option<String>,
        seed: u64,
    ) -> World {
        World {
            directory,
            population: Mutex::new(population),
            settings,
            callback_token: Mutex::new(callback_token),
            rng: Mutex::new(fastrand::Rng::with_seed(seed ^ 0x5eed)),
            http: reqwest::Client::new(),
        }
    }

    /// Today's date in Vietnam (UTC+7), where the agencies are.
    pub fn today(&self) -> Date {
        self.settings.today.unwrap_or_else(|| {
            jiff::Timestamp::now()
                .to_zoned(TimeZone::fixed(Offset::constant(7)))
                .date()
        })
    }
}
