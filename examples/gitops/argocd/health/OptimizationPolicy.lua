-- Argo CD health of a CloudOptim OptimizationPolicy (argocd-cm key resource.customizations.health.cloudoptim.io_OptimizationPolicy).
-- Progressing until the operator has planned the current generation; Degraded when Ready (or a
-- Degraded condition) says so (InvalidPolicy, InvalidBudget, ...); Healthy with the Ready message
-- otherwise, which starts with "Dry run: nothing is changed." when spec.dryRun is true.
-- Lua 5.1 base and table libraries only, as Argo CD's sandbox offers.
local hs = {}
local generation = obj.metadata.generation
local status = obj.status
local ready = nil
local degraded = nil
if status ~= nil and status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    if c.type == "Ready" then ready = c end
    if c.type == "Degraded" then degraded = c end
  end
end
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for CloudOptim to plan this policy"
  return hs
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for CloudOptim to plan generation " .. tostring(generation)
  return hs
end
local message = ready.message or ""
if ready.status == "False" then
  hs.status = "Degraded"
  hs.message = (ready.reason or "NotReady") .. ": " .. message
elseif degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = (degraded.reason or "Degraded") .. ": " .. (degraded.message or "")
elseif ready.status == "True" then
  hs.status = "Healthy"
  if obj.spec ~= nil and obj.spec.dryRun == true then
    hs.message = "Dry run: nothing is changed. " .. message
  else
    hs.message = message
  end
else
  hs.status = "Progressing"
  hs.message = message
end
return hs
