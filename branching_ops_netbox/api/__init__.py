"""The plugin's REST API, where NetBox looks for it: ``/api/plugins/branching-ops/``."""
