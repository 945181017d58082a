-- wrk script for the kv benchmark: XML-RPC calls to /RPC2, alternately
-- set(key, value) and get(key) on 100 keys, as xmlrpc.client sends them.
local function call(method, params)
  local body = "<?xml version='1.0'?>\n<methodCall>\n<methodName>" .. method ..
    "</methodName>\n<params>\n"
  for _, p in ipairs(params) do
    body = body .. "<param>\n<value><string>" .. p .. "</string></value>\n</param>\n"
  end
  body = body .. "</params>\n</methodCall>\n"
  return wrk.format("POST", "/RPC2", {["Content-Type"] = "text/xml"}, body)
end

-- Built in init, not at load: wrk knows the Host header only then, and
-- wrk.format adds it only to requests formatted after that (HTTP/1.1
-- requests without Host are refused with 400).
local calls = {}
local n = 0

init = function(args)
  for i = 0, 99 do
    calls[#calls + 1] = call("set", {"key" .. i, "value of key " .. i})
    calls[#calls + 1] = call("get", {"key" .. i})
  end
end

request = function()
  n = n % #calls + 1
  return calls[n]
end
