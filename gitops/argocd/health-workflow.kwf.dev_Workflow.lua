-- Argo CD health of a kwf Workflow (a reusable definition): healthy unless the
-- operator found it unusable (a cycle, an unknown dependency, a bad schedule).
-- argocd-cm key: resource.customizations.health.workflow.kwf.dev_Workflow
local hs = {status = "Healthy", message = ""}

-- metav1.Condition requires a reason; the message may be empty.
local function explain(c)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return c.reason or "Stalled"
end

local status = obj.status
if status == nil then
  return hs
end

if status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    if c.type == "Stalled" and c.status == "True" then
      hs.status = "Degraded"
      hs.message = explain(c)
      return hs
    end
  end
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
end
return hs
