-- wrk script: a stream of distinct birth registrations (distinct idempotency keys and birth
-- certificate numbers), so every request does the full work of a first call.
local threads = {}
local counter = 0
local thread_id = 0

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  today = args[1]
end

request = function()
  counter = counter + 1
  local n = thread_id .. "-" .. counter
  local body = '{"office_commune_code":"00004","requester_personal_id":"001190123456",'
    .. '"child":{"full_name":"Trần Minh An","date_of_birth":"' .. today .. '","sex":"male","ethnicity":"Kinh",'
    .. '"nationality":"Việt Nam","place_of_birth":"Bệnh viện Xanh Pôn","home_town":"Nam Định"},'
    .. '"birth_certificate_number":"GCS-' .. n .. '",'
    .. '"mother":{"full_name":"Nguyễn Thị Lan","personal_id":"001190123456"},'
    .. '"permanent_address":{"commune_code":"00004","detail":"12 Điện Biên Phủ"}}'
  return wrk.format("POST", "/v1/birth-registrations",
    {["Content-Type"] = "application/json", ["Idempotency-Key"] = "bench-" .. n, ["X-Civicflow-Case-Id"] = "case-" .. n},
    body)
end
