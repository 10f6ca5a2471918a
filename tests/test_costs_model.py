"""The break-even arithmetic against hand calculations, to the cent.

Each scenario's expected figures are worked out here step by step (the comments are
the hand calculation), independently of toolkit.costs.model.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

import pytest

from toolkit.costs import breakeven
from toolkit.costs import money as fmt

CENT = Decimal("0.01")
D = Decimal


def cents(value) -> Decimal:
    return Decimal(value).quantize(CENT)


def test_worked_example_from_the_product_brief():
    """$0.01 per interaction, 1,000,000 daily users x 5 queries: $50,000 a day, $1.5M a 30-day
    month; serving 20% on the device (at no cost) saves $300,000 a month."""
    scenario = {
        "name": "product brief worked example",
        "traffic": {"active_users": 1_000_000, "requests_per_user_per_day": 5},
        "cloud": {"price_per_request": 0.01},
        "edge": {"engineering_hours": 0, "hourly_rate": 0},
        "router": {"on_device_share": 0.2},
    }
    result = breakeven(scenario)
    first = result.rows[0]
    assert first.requests == 1_000_000 * 5 * 30
    assert cents(first.cloud_only / 30) == D("50000.00")
    assert cents(first.cloud_only) == D("1500000.00")
    assert cents(first.cloud_only - first.edge_total) == D("300000.00")
    assert fmt.money(first.cloud_only) == "$1.5M"
    assert fmt.money(first.cloud_only - first.edge_total) == "$300,000"
    assert fmt.money(first.cloud_only / 30) == "$50,000"
    assert result.per_1k["cloud"] == D("10.00")
    assert result.savings[12] == D("3600000")
    data = result.to_dict()
    assert data["first_month"] == {"requests_per_day": 5_000_000.0, "cloud_per_day": 50_000.0, "cloud": 1_500_000.0,
                                   "edge": 1_200_000.0, "saving": 300_000.0}


def test_api_scenario_breaks_even_to_the_cent():
    scenario = {
        "traffic": {"active_users": 10_000, "requests_per_user_per_day": 10},
        "cloud": {"price_per_request": 0.002},
        "edge": {"engineering_hours": 200, "hourly_rate": 100, "model_size_mb": 20, "updates_per_year": 12,
                 "egress_per_gb": 0.09, "upkeep_per_month": 500, "energy_paid_by_user": True,
                 "latency_ms": 30, "power_w": 3, "electricity_per_kwh": 0.2},
        "router": {"on_device_share": 0.75},
    }
    result = breakeven(scenario)
    # requests a month: 10,000 x 10 x 30 = 3,000,000; cloud only: x $0.002 = $6,000
    # edge: 25% routed = 750,000 x 0.002 = $1,500; updates 10,000 devices x 0.02 GB x 12/12 x $0.09 = $18;
    #       upkeep $500; energy paid by the users -> $2,018 a month
    # one-off: 200 h x $100 = $20,000 + first download 10,000 x 0.02 GB x $0.09 = $18 -> $20,018
    # saving $3,982 a month -> break-even 20,018 / 3,982 months
    first = result.rows[0]
    assert cents(first.cloud_only) == D("6000.00")
    assert cents(first.edge_total) == D("2018.00")
    assert cents(sum(result.one_off.values())) == D("20018.00")
    assert result.breakeven_month == D(20018) / D(3982)
    assert round(float(result.breakeven_month), 4) == 5.0271
    assert cents(result.savings[12]) == D("27766.00")  # 12 x 3,982 - 20,018
    assert cents(result.savings[24]) == D("75550.00")
    assert cents(result.savings[36]) == D("123334.00")
    # the users' energy is reported, not charged: 2,250,000 x 0.030 s x 3 W = 202,500 J
    # = 0.05625 kWh x $0.2 = $0.01125
    assert first.user_energy == D("0.01125")
    assert first.edge["energy"] == 0
    assert fmt.months(result.breakeven_month) == "5.0 months"
    assert result.per_1k["cloud"] == D(2)
    assert cents(result.per_1k["edge"] * 1000) == cents(D(2018) / 3_000_000 * 1000 * 1000)  # $0.6727 per 1k


def test_self_hosted_instances_with_edge_boxes_to_the_cent():
    scenario = {
        "traffic": {"active_users": 1_000_000, "requests_per_user_per_day": 20, "peak_to_average": 2},
        "cloud": {"price_per_hour": 1.006, "throughput_rps": 50, "utilisation": 0.5, "min_instances": 1},
        "edge": {"engineering_hours": 300, "hourly_rate": 150, "devices": 40, "hardware_per_device": 249,
                 "model_size_mb": 50, "updates_per_year": 4, "egress_per_gb": 0.09, "latency_ms": 20, "power_w": 15,
                 "electricity_per_kwh": 0.13, "upkeep_per_month": 2000},
        "router": {"on_device_share": 0.95},
    }
    result = breakeven(scenario)
    first = result.rows[0]
    # 600,000,000 requests a month = 231.48 req/s on average, 462.96 at peak; an instance serves
    # 50 x 0.5 = 25 req/s -> ceil(18.52) = 19 instances x $1.006 x 720 h = $13,762.08
    assert first.cloud_only_instances == 19
    assert cents(first.cloud_only) == D("13762.08")
    # edge: 5% routed = 30M a month, 23.15 req/s at peak -> 1 instance = $724.32
    assert first.edge_instances == 1
    assert cents(first.edge["cloud"]) == D("724.32")
    # energy: 570M x 0.020 s x 15 W / 3.6e6 = 47.5 kWh x $0.13 = $6.175
    assert first.edge["energy"] == D("6.175")
    # updates: 40 x 0.05 GB x 4/12 x $0.09 = $0.06
    assert cents(first.edge["updates"]) == D("0.06")
    # one-off: 300 x 150 = 45,000 + 40 x 249 = 9,960 + 40 x 0.05 x 0.09 = 0.18 -> $54,960.18
    assert cents(sum(result.one_off.values())) == D("54960.18")
    monthly_edge = D("724.32") + D("6.175") + D("0.06") + D(2000)
    saving = D("13762.08") - monthly_edge
    assert result.breakeven_month == D("54960.18") / saving
    assert round(float(result.breakeven_month), 3) == 4.982
    assert cents(result.savings[24]) == cents(24 * saving - D("54960.18"))
    # the capacity check: 475,000 requests per box a day -> 10.995 req/s at peak against 50/s
    assert result.capacity["ok"]
    assert round(float(result.capacity["peak_busy_fraction"]), 4) == 0.2199


def test_idle_instances_mean_it_never_breaks_even_and_says_why():
    """A small fleet already sits at its minimum: moving 90% of requests to the device saves no
    instance, so the edge's upkeep is never recovered."""
    scenario = {
        "traffic": {"active_users": 20_000, "requests_per_user_per_day": 30, "peak_to_average": 3},
        "cloud": {"instance": "aws-g4dn-xlarge", "throughput_rps": 400, "utilisation": "60%", "min_instances": 2},
        "edge": {"engineering_hours": 400, "hourly_rate": 120, "upkeep_per_month": 1000},
        "router": {"on_device_share": 0.9},
    }
    result = breakeven(scenario)
    # 18M requests = 20.8 req/s at peak, one instance serves 240 -> the minimum, 2 x $0.526 x 720 = $757.44
    assert cents(result.rows[0].cloud_only) == D("757.44")
    assert cents(result.rows[0].edge_total) == D("1757.44")
    assert result.breakeven_month is None
    assert result.reason == ("the edge option costs $1,757 a month against the cloud's $757, so its one-off "
                             "$48,000 is never recovered")
    assert cents(result.savings[36]) == D("-84000.00")  # 48,000 + 36 x 1,000
    assert result.to_dict()["breakeven"] == "never"
    assert "aws-g4dn-xlarge" in result.scenario.sources["price_per_hour"]


def test_growth_and_new_devices_by_hand():
    """10% growth a month, a $20 device bought for every user (also for new users)."""
    scenario = {
        "traffic": {"active_users": 1000, "requests_per_user_per_day": 10, "monthly_growth": "10%"},
        "cloud": {"price_per_request": 0.01},
        "edge": {"engineering_hours": 0, "hourly_rate": 0, "hardware_per_device": 20},
        "router": {"on_device_share": 1},
        "months": 12,
    }
    result = breakeven(scenario)
    users = [D(1000) * D("1.1") ** (m - 1) for m in range(1, 13)]
    cloud = [u * 10 * 30 * D("0.01") for u in users]  # 3 x users
    edge = [D(0)] + [(users[m] - users[m - 1]) * 20 for m in range(1, 12)]
    gap, crossing = D(20000), None  # one-off: 1,000 devices x $20
    for month in range(12):
        new_gap = gap + edge[month] - cloud[month]
        if new_gap <= 0 and crossing is None:
            crossing = month + gap / (gap - new_gap)
        gap = new_gap
    assert crossing is not None
    assert result.breakeven_month == crossing
    assert cents(result.savings[12]) == cents(sum(cloud) - sum(edge) - 20000)
    assert cents(result.rows[11].cumulative_cloud) == cents(sum(cloud))


def test_beyond_the_horizon_is_extrapolated_in_the_reason():
    scenario = {
        "traffic": {"active_users": 1000, "requests_per_user_per_day": 10},
        "cloud": {"price_per_request": 0.001},
        "edge": {"engineering_hours": 100, "hourly_rate": 100},
        "router": {"on_device_share": 1},
        "months": 24,
    }
    # saving $300 a month against $10,000 one-off: month 33.3, past a 24-month horizon
    result = breakeven(scenario)
    assert result.breakeven_month is None
    assert "not within 24 months" in result.reason and "month 33.3" in result.reason
    assert breakeven(scenario, months=36).breakeven_month == D(10000) / D(300)


def test_device_that_cannot_keep_up_never_breaks_even():
    scenario = {
        "traffic": {"active_users": 100_000, "requests_per_user_per_day": 50, "peak_to_average": 2},
        "cloud": {"price_per_request": 0.01},
        "edge": {"engineering_hours": 10, "hourly_rate": 100, "devices": 10, "latency_ms": 50},
        "router": {"on_device_share": 1},
    }
    # 500,000 requests per device a day = 5.79/s, 11.6/s at peak; one inference of 50 ms = 20/s: fits
    assert breakeven(scenario).capacity["ok"]
    scenario["edge"]["latency_ms"] = 100  # 10/s < 11.6/s
    result = breakeven(scenario)
    assert not result.capacity["ok"]
    assert result.breakeven_month is None
    assert result.reason.startswith("a device cannot keep up: it must serve 11.6 requests/s at peak")


def test_sensitivity_moves_the_breakeven_as_the_arithmetic_says():
    scenario = {
        "traffic": {"active_users": 10_000, "requests_per_user_per_day": 10},
        "cloud": {"price_per_request": 0.002},
        "edge": {"engineering_hours": 200, "hourly_rate": 100},
        "router": {"on_device_share": 0.5},
    }
    result = breakeven(scenario)
    # saving = 3,000,000 x 0.5 x 0.002 = $3,000 a month; one-off $20,000 -> 6.67 months
    assert result.breakeven_month == D(20000) / D(3000)
    rows = {row.name: row for row in result.sensitivity}
    assert rows["engineering_hours"].low_month == D(10000) / D(3000)
    assert rows["engineering_hours"].high_month == D(30000) / D(3000)
    assert rows["on_device_share"].low_month == D(20000) / D(1500)
    assert rows["on_device_share"].high_month == D(20000) / D(4500)
    assert rows["price_per_request"].low_month == D(20000) / D(1500)
    assert set(rows) == {"active_users", "requests_per_user_per_day", "price_per_request", "engineering_hours",
                         "hourly_rate", "on_device_share"}
    # largest swing first: halving the saving doubles the break-even (+6.67 months)
    assert result.sensitivity[0].name in ("active_users", "requests_per_user_per_day", "price_per_request",
                                          "on_device_share")


def test_token_priced_api_from_the_catalogue():
    scenario = {
        "traffic": {"active_users": 50_000, "requests_per_user_per_day": 10, "tokens_in_per_request": 500,
                    "tokens_out_per_request": 200},
        "cloud": {"api": "openai-gpt-4o-mini"},
        "edge": {"engineering_hours": 0, "hourly_rate": 0},
        "router": {"on_device_share": 0},
    }
    result = breakeven(scenario)
    # per request: 500 x $0.15/1M + 200 x $0.60/1M = $0.000195; 15M requests a month = $2,925
    assert cents(result.rows[0].cloud_only) == D("2925.00")
    assert "as of 2025-06-03" in result.scenario.sources["price_per_1m_input_tokens"]


def test_throughput_from_a_catalogue_workload():
    scenario = {
        "traffic": {"active_users": 1_000_000, "requests_per_user_per_day": 100, "peak_to_average": 2},
        "cloud": {"instance": "t4", "workload": "resnet50", "utilisation": 0.5},
        "edge": {"engineering_hours": 0, "hourly_rate": 0},
        "router": {"on_device_share": 0},
    }
    result = breakeven(scenario)
    # 3e9 requests a month = 1,157.4 req/s, 2,314.8 at peak; 6,035.6 x 0.5 per T4 -> 1 instance
    peak = D(3_000_000_000) / (30 * 86400) * 2
    expected = (peak / (D("6035.6") * D("0.5"))).to_integral_value(ROUND_CEILING)
    assert result.rows[0].cloud_only_instances == int(expected) == 1
    assert "mlcommons" in result.scenario.sources["throughput_rps"]


@pytest.mark.parametrize(
    ("value", "text"),
    [(1_500_000, "$1.5M"), (300_000, "$300,000"), (1_040_000, "$1.04M"), (0.0042, "$0.0042"), (12.5, "$12.50"),
     (2_500_000_000, "$2.5B"), (-1200, "-$1,200"), (0, "$0")],
)
def test_money_for_people(value, text):
    assert fmt.money(value) == text


def test_months_for_people():
    assert fmt.months(D("8.2345")) == "8.2 months"
    assert fmt.months(None) == "never"
