"""Tools, prompts and resources from MCP servers (the Model Context Protocol).

Servers are configured in ``[mcp.NAME]`` tables (:class:`~modelplex.config.McpServerConfig`).
:class:`McpHub` starts (or connects to) each server once, lists its tools (cached until the
server sends ``notifications/tools/list_changed``) and turns them into
:class:`modelplex.tools.Tool` objects the loop runs like Python functions::

    async with McpHub(config) as hub:
        tools = await hub.tools(["files"])   # files__read_file, ... when names clash
        meta = await chat.get_response_with_meta("...", tools=tools)

A call's arguments are checked against the tool's input schema before they are sent; each
call has a timeout; results are cut to ``max_result_chars``; an ``isError`` result, a server
that crashed or a call that timed out becomes an error the model sees (with the tail of the
server's stderr). Tools annotated ``destructiveHint`` run only when ``confirm(server, tool,
arguments)`` returns true.

The modules: :mod:`~modelplex.mcp.session` (one server's session), :mod:`~modelplex.mcp.hub`
(the servers of a conversation: tools, prompts, resources), :mod:`~modelplex.mcp.prompts`
(``mcp:SERVER/PROMPT`` templates) and :mod:`~modelplex.mcp.layer` (the request path's layer
that runs a named model's MCP tools, ``[models.NAME] mcp = [...]``). The ``mcp`` SDK is
imported only inside this package (``pip install 'modelplex[mcp]'``).
"""

from __future__ import annotations

from modelplex.mcp.hub import McpHub
from modelplex.mcp.session import Confirm, McpError, McpServer, McpToolError, load_sdk

__all__ = ["Confirm", "McpError", "McpHub", "McpServer", "McpToolError", "load_sdk"]
