"""What a user of the original tool (navin251285/helloagent, mcp_tutorial/11_mcp_llm_web_socket)
needs to switch without rewriting anything: its data files (`data`), its four tools and their
plain-text answers (`protocol`, `text`). Everything here translates, then hands over to the
canonical code; nothing here validates or serves a request on its own."""
