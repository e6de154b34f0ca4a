-- Argo CD health of a kwf Job (one run), read from the status the operator writes.
-- argocd-cm key: resource.customizations.health.workflow.kwf.dev_Job
local hs = {}

-- metav1.Condition requires a reason; the message may be empty.
local function explain(c)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return c.reason or "Stalled"
end

local function condition(status, type)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick up the run"
  return hs
end

-- A status written for an older spec says nothing about the current one.
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local progress = status.progress or ""
local function describe(default)
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  return default
end

if status.phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = describe("Succeeded, " .. progress .. " steps")
  return hs
end
if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = describe("Failed")
  return hs
end
if status.phase == "Cancelled" then
  hs.status = "Degraded"
  hs.message = describe("Cancelled")
  return hs
end

local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = explain(stalled)
  return hs
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended at " .. progress .. " steps"
  return hs
end

hs.status = "Progressing"
hs.message = status.phase .. ", " .. progress .. " steps"
return hs
