-- wrk script: point queries (lens=latest, exact subject) over the subjects stemedb-bench gen
-- --subjects N makes (fleet/eu-west/rack-{s % 97}/server-{s}/cpu). SUBJECTS env var, default 250000.
local subjects = tonumber(os.getenv("SUBJECTS") or "250000")
math.randomseed(os.time())
request = function()
  local s = math.random(0, subjects - 1)
  local path = string.format("/v1/query?subject=fleet/eu-west/rack-%d/server-%d/cpu&lens=latest", s % 97, s)
  return wrk.format("GET", path)
end
response = function(status, headers, body)
  if status ~= 200 then
    print("unexpected status " .. status .. ": " .. body)
    wrk.thread:stop()
  end
end
