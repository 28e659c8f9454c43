"""The faults the local Oracle server can inject (`oracle.server_faults`): named here, without the
server's HTTP imports, so a profile's fault names are checked when it is loaded."""
FAULTS = ("http_500", "http_429", "timeout", "drop_stream", "no_markers", "bad_json")
