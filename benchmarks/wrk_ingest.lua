-- The native load generator of benchmarks/api_ingest.py (which starts the server and wrk).
-- By hand, against a running `unlearnd serve`:
--
--   UNLEARN_KEY=<admin key> UNLEARN_MODEL=<model id> UNLEARN_KEYS_FILE=<training keys> \
--     wrk -t1 -c64 -d10s -s benchmarks/wrk_ingest.lua --latency http://127.0.0.1:8000
--
-- Each request asks to forget one training key of the file (one key per line), for a new
-- subject each time. Without UNLEARN_KEYS_FILE the keys are "train/NNNNN" (0..1199): on
-- digits about a tenth of those are holdout keys and answer 422 (non-2xx in wrk's count).
local key = os.getenv("UNLEARN_KEY")
local model = os.getenv("UNLEARN_MODEL")
local keys_file = os.getenv("UNLEARN_KEYS_FILE")
local keys = {}
if keys_file then
  for line in io.lines(keys_file) do
    if line ~= "" then keys[#keys + 1] = line end
  end
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
-- UNLEARN_DELAY_MS paces each connection (a fixed offered rate: connections * 1000 /
-- delay per second while answers come back well within the delay), jittered +-50% so the
-- connections do not send in lockstep.
local delay_ms = tonumber(os.getenv("UNLEARN_DELAY_MS") or "")
if delay_ms then
  delay = function()
    return math.floor(delay_ms * (0.5 + math.random()))
  end
end
local counter = 0
request = function()
  counter = counter + 1
  local sample
  if #keys > 0 then
    sample = keys[(counter * 7919) % #keys + 1]
  else
    sample = string.format("train/%05d", (counter * 7919) % 1200)
  end
  local body = '{"model_id": "' .. model .. '", "subject_id": "s' .. counter
    .. '-' .. math.random(1, 1000000000) .. '", "sample_keys": ["' .. sample .. '"]}'
  return wrk.format(nil, "/v1/deletion-requests", nil, body)
end
