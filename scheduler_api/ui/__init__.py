"""The operator dashboard under /ui (README "Dashboard"): server-rendered pages over the API's own
route functions, signed in with an API key. `install_ui(app, settings, keys)` mounts it."""
