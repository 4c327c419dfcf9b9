"""The tool actor: typed tools in a workspace sandbox, with human approval."""
