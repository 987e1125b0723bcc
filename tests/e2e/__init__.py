"""Several real processes together: replicas behind nginx, faults with restarts,
the CLI and the watcher, the client against servers, the pytest plugin, the
deployment files and the browser page."""
