"""The tools the bridge serves (MCP_BRIDGE_TOOL_MODULES=proj.mcp_tools): existing tasks,
named here, their code unchanged."""

from mcp_celery_bridge import expose

expose("proj.tasks.build_report", task_support="required")
expose("proj.tasks.fetch_rate", task_support="optional")
expose("proj.tasks.render_pdf")
expose("proj.tasks.publish_report")
# A task that starts a canvas and returns its id, declared a workflow: the MCP task follows
# the chain to its end.
expose("proj.tasks.start_pipeline", workflow=True)
# It replaces itself with a chord: one MCP task for all its parts.
expose("proj.tasks.survey", task_support="required")
# A task this process need not import: its Celery name and a schema given by hand.
expose(
    "proj.tasks.add",
    name="add_numbers",
    description="Add two integers.",
    input_schema={
        "type": "object",
        "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
        "required": ["x", "y"],
        "additionalProperties": False,
    },
)
