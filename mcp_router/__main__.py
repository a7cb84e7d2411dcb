from mcp_router.apps.cli import main

main()
