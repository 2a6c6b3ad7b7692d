"""The jobboard admin tool: listings, operations, the live views and the web dashboard."""
