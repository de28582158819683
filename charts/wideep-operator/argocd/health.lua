-- Argo CD health check for wideep.dev/ParallelDeployment (Lua 5.1, as Argo CD's gopher-lua runs it).
-- Install: argocd-cm key `resource.customizations.health.wideep.dev_ParallelDeployment` (docs/gitops.md).
--
--   Progressing  no status yet, or status.observedGeneration older than metadata.generation (the operator
--                has not seen the latest spec), or Progressing=True (creating, replacing, waiting for ranks)
--   Degraded     Valid=False (spec refused; the running group is left as it was), any condition with reason
--                RestartBudgetExhausted, or Degraded=True (a rank failed: restart, backoff, restarts disabled)
--   Healthy      Ready=True, for the current generation
local hs = {}

local function condition(conditions, ctype)
  for _, c in ipairs(conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function say(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end

if obj.status == nil or obj.status.conditions == nil or obj.status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the wideep operator to report status"
  return hs
end

if obj.status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the wideep operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions
local valid = condition(conditions, "Valid")
local ready = condition(conditions, "Ready")
local progressing = condition(conditions, "Progressing")
local degraded = condition(conditions, "Degraded")

if valid ~= nil and valid.status == "False" then
  hs.status = "Degraded"
  hs.message = "Invalid spec: " .. say(valid, "refused by the operator")
  return hs
end

for _, c in ipairs(conditions) do
  if c.reason == "RestartBudgetExhausted" then
    hs.status = "Degraded"
    hs.message = say(c, "Restart budget exhausted")
    return hs
  end
end

if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = say(degraded, "Degraded")
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = say(ready, "All DP ranks ready")
  return hs
end

hs.status = "Progressing"
hs.message = say(progressing, say(ready, "Waiting for the DP ranks to become ready"))
return hs
