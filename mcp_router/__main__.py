from mcp_router.cli import main

main()
