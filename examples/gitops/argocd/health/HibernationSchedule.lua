-- Argo CD health of a CloudOptim HibernationSchedule (argocd-cm key resource.customizations.health.cloudoptim.io_HibernationSchedule).
-- Progressing until the operator has applied the current generation, and while the targets wake up;
-- Degraded when Ready is False; Suspended while the targets sleep (status.state Hibernating) or the
-- schedule is suspended (spec.suspend, status.state Suspended); Healthy while awake. The message is
-- the Ready message, which names the state and the next transition.
-- Lua 5.1 base and table libraries only, as Argo CD's sandbox offers.
local hs = {}
local generation = obj.metadata.generation
local status = obj.status
local ready = nil
if status ~= nil and status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    if c.type == "Ready" then ready = c end
  end
end
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for CloudOptim to apply this schedule"
  return hs
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for CloudOptim to apply generation " .. tostring(generation)
  return hs
end
local message = ready.message or ""
if ready.status == "False" then
  hs.status = "Degraded"
  hs.message = (ready.reason or "NotReady") .. ": " .. message
elseif ready.status ~= "True" then
  hs.status = "Progressing"
  hs.message = message
elseif status.state == "Hibernating" then
  hs.status = "Suspended"
  hs.message = message
elseif status.state == "Suspended" then
  hs.status = "Suspended"
  hs.message = message
elseif status.state == "WakingUp" then
  hs.status = "Progressing"
  hs.message = message
else
  hs.status = "Healthy"
  hs.message = message
end
return hs
