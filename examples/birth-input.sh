#!/bin/sh
# Prints the input of a birth dossier for the family the mock agencies know, as JSON: the child
# born a week ago (a birth is registered within 60 days of it), and the dossier and birth
# certificate numbered N, so that each dossier is a new one (a certificate is registered once).
#
#   examples/birth-input.sh N > birth-N.json
#   examples/birth-input.sh N incomplete > birth-N.json
#
# With `incomplete`, the mother's personal ID is left out: the civil-status office asks for it
# (a supplement), and the case waits for the citizen until the portal sends it.
set -eu
n=$(printf %04d "${1:?usage: examples/birth-input.sh N [incomplete]}")
born=$(date -d '7 days ago' +%Y-%m-%d)
mother_id='
    "personal_id": "001190123456"'
[ "${2:-}" = incomplete ] && mother_id=''
mother_id=${mother_id:+,$mother_id}
cat <<JSON
{
  "dossier_number": "G01.123-$(date +%y%m%d)-$n",
  "requester_personal_id": "001190123456",
  "child": {
    "full_name": "Trần Minh An",
    "date_of_birth": "$born",
    "sex": "male",
    "ethnicity": "Kinh",
    "nationality": "Việt Nam",
    "place_of_birth": "Bệnh viện Xanh Pôn, Hà Nội",
    "home_town": "Nam Định"
  },
  "birth_certificate_number": "GCS-$(date +%Y%m%d)-$n",
  "mother": {
    "full_name": "Nguyễn Thị Lan"$mother_id
  },
  "father": {
    "full_name": "Trần Văn Minh",
    "personal_id": "001089654321"
  },
  "permanent_address": {
    "commune_code": "00004",
    "detail": "12 Phố Đội Cấn"
  },
  "household_head_personal_id": "001089654321",
  "relationship_to_head": "con",
  "result_delivery": "online"
}
JSON
