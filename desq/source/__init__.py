"""The business application's table of files: the adapter, the marker, the plan, the originals."""
