-- Argo CD health check for apikeys.dev/ApiKey (apikey-operator).
--
-- It reads the key's kstatus conditions, the same ones `kubectl get apikeys`
-- and Flux read: Stalled wins (the key is refused and needs a spec change),
-- then Suspended, then Reconciling, then Ready. A status written for an
-- older generation of the spec says nothing about the current one. A key in
-- a rotation's grace period is Ready like any other; a Ready key that is
-- ExpiringSoon stays Healthy (it still works) with the warning as message.
-- Installed in argocd-cm as resource.customizations.health.apikeys.dev_ApiKey;
-- see docs/argocd.md. Uses only Lua's base library, as Argo CD provides.

local hs = {
  status = "Progressing",
  message = "Waiting for the operator to report the key's status",
}

local function findCondition(conditions, conditionType)
  for _, c in ipairs(conditions) do
    if c.type == conditionType then
      return c
    end
  end
  return nil
end

local function isTrue(c)
  return c ~= nil and c.status == "True"
end

local function messageOf(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if obj.status == nil or obj.status.conditions == nil then
  return hs
end

local generation = tonumber(obj.metadata.generation) or 0
local observed = tonumber(obj.status.observedGeneration) or 0
if observed < generation then
  hs.message = "Waiting for the operator to act on generation " .. generation .. " of the spec"
  return hs
end

local conditions = obj.status.conditions

local stalled = findCondition(conditions, "Stalled")
if isTrue(stalled) then
  hs.status = "Degraded"
  local reason = stalled.reason or "Stalled"
  hs.message = reason .. ": " .. messageOf(stalled, "the key needs a change to its spec")
  return hs
end

local suspended = findCondition(conditions, "Suspended")
if isTrue(suspended) then
  hs.status = "Suspended"
  hs.message = messageOf(suspended, "spec.suspended is true")
  return hs
end

local reconciling = findCondition(conditions, "Reconciling")
if isTrue(reconciling) then
  hs.message = messageOf(reconciling, "The operator is working on the key")
  return hs
end

local ready = findCondition(conditions, "Ready")
if isTrue(ready) then
  hs.status = "Healthy"
  hs.message = messageOf(ready, "The key is ready")
  -- Argo CD has no warning status, so the warning takes the message.
  local expiringSoon = findCondition(conditions, "ExpiringSoon")
  if isTrue(expiringSoon) then
    hs.message = "ExpiringSoon: " .. messageOf(expiringSoon, "the key is close to its expiry")
  end
  return hs
end
if ready ~= nil then
  hs.message = messageOf(ready, "The key is not ready yet")
end
return hs
