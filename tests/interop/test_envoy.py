"""deploy/envoy/envoy.yaml, checked for structure: envoy itself cannot be installed on the build
machine (it is not in Debian's or PyPI's registries), so this parses the YAML and asserts what
the configuration must do. Run `envoy --mode validate -c deploy/envoy/envoy.yaml` where envoy is.
"""
import pathlib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
HCM = "envoy.filters.network.http_connection_manager"


def load():
    return yaml.safe_load((ROOT / "deploy" / "envoy" / "envoy.yaml").read_text())


def listener(cfg, name):
    found = [l for l in cfg["static_resources"]["listeners"] if l["name"] == name]
    assert len(found) == 1, name
    return found[0]


def hcm(chain):
    found = [f for f in chain["filters"] if f["name"] == HCM]
    assert len(found) == 1
    return found[0]["typed_config"]


def test_http_only_redirects():
    chain = listener(load(), "http_redirect")["filter_chains"][0]
    routes = hcm(chain)["route_config"]["virtual_hosts"][0]["routes"]
    assert routes == [{"match": {"prefix": "/"}, "redirect": {"https_redirect": True}}]


def test_tls_and_http2():
    chain = listener(load(), "https")["filter_chains"][0]
    tls = chain["transport_socket"]["typed_config"]["common_tls_context"]
    assert tls["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_2"
    assert tls["tls_params"]["tls_maximum_protocol_version"] == "TLSv1_3"
    assert all(c.startswith("ECDHE-") for c in tls["tls_params"]["cipher_suites"])
    assert tls["alpn_protocols"][0] == "h2"


def test_routes_limits_headers_and_forwarding():
    m = hcm(listener(load(), "https")["filter_chains"][0])
    # The client address is appended to X-Forwarded-For; the server trusts only 127.0.0.1.
    assert m["use_remote_address"] is True and m["xff_num_trusted_hops"] == 0
    assert m["generate_request_id"] is True and m["preserve_external_request_id"] is True
    assert m["access_log"][0]["typed_config"]["log_format"]["json_format"]["request_id"]
    headers = {h["header"]["key"]: h["header"]["value"] for h in m["route_config"]["response_headers_to_add"]}
    assert headers["Strict-Transport-Security"].startswith("max-age=63072000")
    names = [f["name"] for f in m["http_filters"]]
    assert names[-1] == "envoy.filters.http.router", names
    assert "envoy.filters.http.local_ratelimit" in names and "envoy.filters.http.buffer" in names
    default_body = [f for f in m["http_filters"] if f["name"] == "envoy.filters.http.buffer"][0]
    assert default_body["typed_config"]["max_request_bytes"] == 1024 * 1024
    routes = {r["match"].get("path") or r["match"].get("prefix"): r for r in m["route_config"]["virtual_hosts"][0]["routes"]}
    assert routes["/metrics"]["direct_response"]["status"] == 404
    # Body limits match the server's: 16 MiB batches, 64 KiB queries, 16 KiB admin.
    for path, limit in [("/v1/assert", 16 * 1024 * 1024), ("/v1/query", 64 * 1024), ("/v1/admin/", 16 * 1024)]:
        per = routes[path]["typed_per_filter_config"]
        assert per["envoy.filters.http.buffer"]["buffer"]["max_request_bytes"] == limit, path
    for path in ["/v1/assert", "/v1/query", "/v1/admin/", "/"]:
        rl = routes[path]["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"]
        assert rl["token_bucket"]["tokens_per_fill"] > 0, path
        assert rl["filter_enforced"]["default_value"]["numerator"] == 100, path
        assert routes[path]["route"]["cluster"] == "stemedb"


def test_upstream_is_health_checked_on_ready():
    cluster = load()["static_resources"]["clusters"][0]
    assert cluster["name"] == "stemedb"
    addr = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert (addr["address"], addr["port_value"]) == ("127.0.0.1", 18180)
    assert cluster["health_checks"][0]["http_health_check"]["path"] == "/v1/ready"
