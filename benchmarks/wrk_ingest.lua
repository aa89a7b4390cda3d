-- A native load generator for the ingest path, beside benchmarks/api_ingest.py (whose
-- Python generator needs most of a core itself). Against a running `unlearnd serve`:
--
--   UNLEARN_KEY=<admin key> UNLEARN_MODEL=<model id> \
--     wrk -t1 -c16 -d10s -s benchmarks/wrk_ingest.lua --latency http://127.0.0.1:8000
--
-- Each request asks to forget one training key "train/NNNNN" (0..1199); on digits about
-- a tenth of those are holdout keys and answer 422, which wrk reports as non-2xx.
local key = os.getenv("UNLEARN_KEY")
local model = os.getenv("UNLEARN_MODEL")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
local counter = 0
request = function()
  counter = counter + 1
  local sample = string.format("train/%05d", (counter * 7919) % 1200)
  local body = '{"model_id": "' .. model .. '", "subject_id": "s' .. counter
    .. '", "sample_keys": ["' .. sample .. '"]}'
  return wrk.format(nil, "/v1/deletion-requests", nil, body)
end
