"""Issue 12's cost realism, against hand calculations: tiers at the margin, fleets sized from
throughput, the latency budget, the model router, instance purchase options and autoscaling,
device lifetime and fees, installs, discounting, the horizon, and prefill-priced LLM serving."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from toolkit.costs import breakeven
from toolkit.errors import BadInput


def scenario(**sections) -> dict:
    base = {
        "traffic": {"active_users": 1_000_000, "requests_per_user_per_day": 5},
        "cloud": {"price_per_request": 0.01},
        "edge": {"engineering_hours": 0, "hourly_rate": 0},
        "router": {"on_device_share": 0.2},
    }
    for name, changes in sections.items():
        if isinstance(changes, dict) and isinstance(base.get(name), dict):
            base[name] = {**base[name], **changes}
        else:
            base[name] = changes
    return base


def test_vision_tiers_are_priced_at_the_margin():
    # 400,000 photos a day = 12M units a month: 1,000 free, 4,999,000 x $1.50/1k, 7,000,000 x $1.00/1k
    result = breakeven(scenario(traffic={"active_users": 50_000, "requests_per_user_per_day": 8},
                                cloud={"price_per_request": None, "api": "google-cloud-vision-labels"}))
    assert result.rows[0].cloud_only == D("7498.5") + D("7000")
    # the routed 80% (9.6M) pays the higher rates first: 7,498.5 + 4,600
    assert result.rows[0].edge["cloud"] == D("7498.5") + D("4600")
    assert not result.warnings or "last price tier" not in result.warnings[0]


def test_traffic_past_the_last_tier_warns():
    # the demo's lockers: 2,000 x 2,000 x 30 = 120M units, past the 20M tier
    result = breakeven(scenario(traffic={"active_users": 2000, "requests_per_user_per_day": 2000},
                                cloud={"price_per_request": None, "api": "google-cloud-vision-labels"}))
    assert result.rows[0].cloud_only == D("7498.5") + D("115000")
    assert any("passes the catalogue's last price tier (20,000,000 a month) from month 1" in w
               for w in result.warnings)


def test_nothing_is_reported_past_the_horizon():
    result = breakeven(scenario(months=12))
    assert list(result.savings) == [12]
    assert len(result.rows) == 12 and len(result.to_dict()["months"]) == 12
    assert set(breakeven(scenario(months=30)).savings) == {12, 24, 30}


def test_dedicated_devices_are_bought_for_the_peak_not_for_user_growth():
    # 200 boxes declared: they stay 200 while users grow 5% a month
    fixed = breakeven(scenario(traffic={"monthly_growth": "5%"},
                               edge={"devices": 200, "hardware_per_device": 100, "latency_ms": 10}, months=3))
    assert [row.devices for row in fixed.rows] == [200, 200, 200]
    assert all(row.edge["new_devices"] == 0 for row in fixed.rows)
    # sized from traffic: 5M requests a day x 20% / 86,400 s x peak 2 = 23.15 req/s at peak;
    # one box at p50 10 ms serves 100 req/s -> 1 box; at 250 ms (4/s) -> ceil(5.79) = 6 boxes
    sized = breakeven(scenario(edge={"devices": "traffic", "hardware_per_device": 100, "latency_ms": 250}))
    assert sized.rows[0].devices == 6
    assert sized.one_off["hardware"] == 600
    assert sized.devices["sized"] == "traffic" and sized.devices["latency"] == "stated"
    measured = breakeven(scenario(edge={"devices": "traffic", "latency_ms": 250}),
                         figures={"latency_ms": (125, "estimate: roofline on raspberry-pi-5")})
    assert measured.rows[0].devices == 3 and measured.devices["latency"] == "estimate"


def test_concurrency_multiplies_a_devices_throughput():
    result = breakeven(scenario(edge={"devices": "traffic", "latency_ms": 250, "concurrency": 2}))
    assert result.rows[0].devices == 3  # 23.15 / (4 x 2) -> 3


def test_latency_budget_sends_slow_requests_to_the_cloud():
    # p50 40 ms, p95 90 ms, budget 65 ms: 50% + 45% x (65 - 40) / (90 - 40) = 72.5% within
    result = breakeven(scenario(edge={"latency_ms": 40, "latency_p95_ms": 90, "latency_budget_ms": 65},
                                router={"on_device_share": 0.8}))
    assert result.effective_share == D("0.8") * D("0.725")
    assert result.rows[0].device_requests == D(150_000_000) * D("0.58")
    over = breakeven(scenario(edge={"latency_ms": 80, "latency_budget_ms": 65}))
    assert over.effective_share == 0 and over.rows[0].edge["cloud"] == over.rows[0].cloud_only


def test_model_router_between_two_cloud_models():
    # 500 in / 200 out tokens: gpt-4o $2.50/$10 per 1M -> $0.00325; gpt-4o-mini $0.15/$0.60 -> $0.000195
    base = {"active_users": 10_000, "requests_per_user_per_day": 10, "tokens_in_per_request": 500,
            "tokens_out_per_request": 200}
    large = breakeven(scenario(traffic=base, cloud={"price_per_request": None, "api": "openai-gpt-4o"}))
    routed = breakeven(scenario(traffic=base, cloud={"price_per_request": None, "api": "openai-gpt-4o",
                                                     "small_model": {"api": "openai-gpt-4o-mini", "share": "70%"}}))
    requests = D(3_000_000)
    assert large.rows[0].cloud_only == requests * D("0.00325")
    assert routed.rows[0].cloud_only == requests * (D("0.3") * D("0.00325") + D("0.7") * D("0.000195"))


def test_reserved_and_spot_prices_and_an_autoscaled_fleet(tmp_path):
    (tmp_path / "box.yaml").write_text(
        "name: my-box\nkind: instance\ncurrency: USD\nas_of: '2026-10'\nsource: our quote\n"
        "price_per_hour: 1.0\nprice_per_hour_reserved: 0.6\nprice_per_hour_spot: 0.3\n")
    load = [1] * 12 + [3] * 12  # mean 2: the busy half needs 3/2 of the average
    cloud = {"price_per_request": None, "instance": "my-box", "throughput_rps": 10, "utilisation": 1,
             "min_instances": 1}
    traffic = {"active_users": 864_000, "requests_per_user_per_day": 1, "hourly_load": load}  # 10 req/s average
    peak = breakeven(scenario(traffic=traffic, cloud=cloud), catalogue=[tmp_path])
    # peak_to_average from the curve: 3 / 2 = 1.5 -> 15 req/s -> 2 instances x $1 x 720 h
    assert peak.rows[0].cloud_only == D(1440)
    reserved = breakeven(scenario(traffic=traffic, cloud={**cloud, "purchase": "reserved"}), catalogue=[tmp_path])
    assert reserved.rows[0].cloud_only == D(2) * D("0.6") * 720
    auto = breakeven(scenario(traffic=traffic, cloud={**cloud, "scaling": "autoscaled"}), catalogue=[tmp_path])
    # quiet hours 5 req/s -> 1 instance, busy hours 15 -> 2: (12 x 1 + 12 x 2) x $1 x 30 days
    assert auto.rows[0].cloud_only == D(36 * 30)
    assert auto.alternatives == {"cloud_only_peak": D(1440)}
    assert "your catalogue" in str(auto.to_dict()["catalogue"]) or auto.scenario.entries[0].origin == str(tmp_path)


def test_device_lifetime_fees_installs_and_discounting():
    result = breakeven(scenario(
        traffic={"installs": 3_000_000},
        edge={"devices": 10, "hardware_per_device": 100, "lifetime_months": 12, "fee_per_device_per_month": 5,
              "model_size_mb": 100, "egress_per_gb": 0.1, "latency_ms": 1}, months=25))
    assert result.one_off["hardware"] == 1000
    assert result.one_off["first_download"] == D(3_000_000) * D("0.1") * D("0.1")  # per install, not per user
    assert [row.edge["replacement"] for row in result.rows if row.edge["replacement"]] == [1000, 1000]
    assert [row.month for row in result.rows if row.edge["replacement"]] == [13, 25]
    assert result.rows[0].edge["fees"] == 50
    plain = breakeven(scenario())
    discounted = breakeven(scenario(discount_rate="10%"))
    assert discounted.rows[11].cumulative_cloud < plain.rows[11].cumulative_cloud
    assert discounted.rows[11].discount == D("1.1") ** -1


def test_self_hosted_llm_cost_depends_on_the_prompt_length():
    def throughput(tokens_in):
        return breakeven(scenario(
            traffic={"tokens_in_per_request": tokens_in, "tokens_out_per_request": 128},
            cloud={"price_per_request": None, "instance": "aws-p5-48xlarge", "workload": "llama-3.1-8b-fp8",
                   "utilisation": 0.5, "prefill_tokens_per_s": 1_000_000})).inputs.throughput_rps

    # measured at 128 in / 128 out: 226,496 tok/s / 128 = 1,769.5 requests/s
    assert throughput(128) == D(226496) / D(128)
    # 2,000 tokens in: 128 / 226,496 s + 1,872 / 1e6 s per request
    assert throughput(2000) == 1 / (D(128) / D(226496) + D(1872) / D(1_000_000))
    assert throughput(100_000) < throughput(2000) < throughput(128)
    with pytest.raises(BadInput, match="cloud.prefill_tokens_per_s is required"):
        breakeven(scenario(traffic={"tokens_in_per_request": 2000, "tokens_out_per_request": 128},
                           cloud={"price_per_request": None, "instance": "aws-p5-48xlarge",
                                  "workload": "llama-3.1-8b-fp8", "utilisation": 0.5}))


def test_figures_from_a_caller_replace_the_scenarios_and_name_their_source():
    result = breakeven(scenario(), figures={"on_device_share": ("0.35", "confidence ≥ 0.9 on validation data")})
    assert result.inputs.on_device_share == D("0.35")
    assert result.scenario.sources["on_device_share"] == "confidence ≥ 0.9 on validation data"
    with pytest.raises(BadInput, match=r"figures.on_device_share must be within \[0, 1\]"):
        breakeven(scenario(), figures={"on_device_share": (2, "x")})
