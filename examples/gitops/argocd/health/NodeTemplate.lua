-- Argo CD health of a CloudOptim NodeTemplate (argocd-cm key resource.customizations.health.cloudoptim.io_NodeTemplate).
-- Progressing until the operator has ranked the current generation; Degraded when Ready is False
-- (AutoScalingGroupNotFound, AccessDenied, ConflictingPolicies, NoMatchingInstanceTypes, ...);
-- Healthy with the Ready message otherwise (it says when a policy in dry run leaves the groups alone).
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
  hs.message = "Waiting for CloudOptim to rank this template"
  return hs
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for CloudOptim to rank generation " .. tostring(generation)
  return hs
end
local message = ready.message or ""
if ready.status == "False" then
  hs.status = "Degraded"
  hs.message = (ready.reason or "NotReady") .. ": " .. message
elseif ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message
else
  hs.status = "Progressing"
  hs.message = message
end
return hs
