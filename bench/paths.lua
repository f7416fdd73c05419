-- wrk script: cycles through the request paths in the file named by $WRK_PATHS (one per line),
-- with the method in $WRK_METHOD (GET or HEAD; default GET). Redirects are never followed (wrk
-- does not), so a GET measures the 307 itself. Each thread starts at its own offset, so the
-- threads do not walk the list in lockstep.
local method = os.getenv("WRK_METHOD") or "GET"
local file = os.getenv("WRK_PATHS") or error("WRK_PATHS is not set")

local paths = {}
for line in io.lines(file) do
  if #line > 0 then
    paths[#paths + 1] = line
  end
end
assert(#paths > 0, "no paths in " .. file)

-- What skopeo and containerd accept; distribution answers an OCI manifest only when asked for it.
wrk.headers["Accept"] = "application/vnd.oci.image.manifest.v1+json, "
  .. "application/vnd.oci.image.index.v1+json, "
  .. "application/vnd.docker.distribution.manifest.v2+json, "
  .. "application/vnd.docker.distribution.manifest.list.v2+json, */*"

local requests = {}
local i = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("start", threads * 7919)
end

function init(args)
  -- Formatted once: the client should spend as little CPU per request as it can, since it
  -- shares the machine with the server it measures.
  for n, path in ipairs(paths) do
    requests[n] = wrk.format(method, path)
  end
  i = (start or 0) % #requests
end

function request()
  i = i % #requests + 1
  return requests[i]
end
