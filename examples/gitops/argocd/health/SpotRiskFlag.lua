-- Argo CD health of a CloudOptim SpotRiskFlag (argocd-cm key resource.customizations.health.cloudoptim.io_SpotRiskFlag).
-- The operator raises and mirrors flags and writes no status on them today: a flag is a record, so it
-- is Healthy, with a message saying what it keeps out of the ranking and until when. Should a Ready
-- condition appear, it is honoured (False = Degraded). Argo CD's sandbox has no clock in the base
-- library, so expiry is reported, not judged. Lua 5.1 base and table libraries only.
local hs = {}
local spec = obj.spec or {}
if obj.status ~= nil and obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" and c.status == "False" then
      hs.status = "Degraded"
      hs.message = (c.reason or "NotReady") .. ": " .. (c.message or "")
      return hs
    end
  end
end
local count = ""
if spec.count ~= nil then
  count = ", " .. tostring(spec.count) .. " report(s)"
end
hs.status = "Healthy"
hs.message = tostring(spec.reason or "Risk") .. " flag for " .. tostring(spec.instanceType) .. " in " .. tostring(spec.zone) ..
  " (source " .. tostring(spec.source or "Local") .. count .. "): Spot ranking leaves it out until " ..
  tostring(spec.expiresAt or "?")
return hs
