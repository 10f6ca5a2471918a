"""The commented scenario printed by `edgeward breakeven --example` (valid as it stands)."""

EXAMPLE = """\
# A break-even scenario for `edgeward breakeven`.
# A photo-tagging feature in a phone app: today every photo goes to a cloud vision API;
# the plan is to run a small classifier on the phone and send only the hard cases on.
# Every figure may also be written as {value: 0.09, source: "where it came from"};
# money may say its currency ("95 EUR") and must match `currency`.

name: Photo tagging in the app
description: Cloud vision API against an on-device classifier on the users' own phones
currency: USD
months: 36                      # horizon of the report (--months overrides)
# model: digits-int8            # name or sha256 of the model; --bench files must have measured it

traffic:
  active_users: 50000           # daily active users in month 1
  requests_per_user_per_day: 8
  monthly_growth: 4%            # users grow by this much each month (0.04 works too)
  peak_to_average: 3            # busiest second vs the day's average (sizes instances, checks devices)
  # tokens_in_per_request: 500  # for APIs priced per token
  # tokens_out_per_request: 200
  # seconds_per_request: 20     # for APIs priced per minute (speech)

cloud:
  api: google-cloud-vision-labels   # a catalogue entry (device_profiles/cloud/), or your own numbers:
  # price_per_request: 0.0015       # or price_per_1k_requests, price_per_1m_input_tokens, ...
  # Self-hosted instead of an API (idle capacity is paid):
  # instance: aws-g4dn-xlarge       # or price_per_hour: 0.526
  # throughput_rps: 400             # requests/s per instance (measured), or workload: resnet50
  # utilisation: 60%                # target busy fraction per instance
  # min_instances: 2

edge:
  engineering_hours: 480        # one-off: convert, validate, integrate, release
  hourly_rate: 125
  hardware_per_device: 0        # phones the users already own; an edge box per site would cost here
  # devices: 40                 # how many devices serve the traffic (default: one per user)
  model_size_mb: 14             # downloaded once per device, then on every update
  updates_per_year: 6
  egress: aws-internet-egress   # or egress_per_gb: 0.09
  latency_ms: 18                # one inference on the device; --bench replaces it with a measurement
  power_w: 4                    # device draw while inferring (estimate for a phone SoC under load)
  electricity: us-electricity-residential   # or electricity_per_kwh: 0.17
  energy_paid_by_user: true     # the users charge their phones: reported, not charged to you
  upkeep_per_month: 3000        # monitoring, re-validation on new phones, support

router:
  on_device_share: 85%          # requests answered on the phone; the rest go to the cloud API
"""
