"""The plan's HTML page (Jinja2, rendered with autoescape: every name and path is escaped)."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Plan: {{ plan.scenario_name }}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#1a1a1a}
table{border-collapse:collapse;width:100%;margin:1em 0}th,td{border:1px solid #ccc;padding:.35em .6em;text-align:left}
th{background:#f2f2f2}td{white-space:nowrap}tr.best td{background:#eaf6ec}.muted{color:#666}
p.answer{font-size:1.15em;border-left:4px solid #176b2c;padding:.4em .8em;background:#f6fbf7}
img{max-width:100%}@media print{body{margin:0}}
</style></head><body>
<h1>Plan: {{ plan.scenario_name }}</h1>
<p class="answer">{{ plan.recommendation }}</p>
<table>
<tr>{% for cell in header %}<th>{{ cell }}</th>{% endfor %}</tr>
{% for row in rows %}<tr{% if row[-1] == "recommended" %} class="best"{% endif %}>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</table>
<ul class="muted">{% for line in explanations %}<li>{{ line }}</li>{% endfor %}</ul>
{% if plan.notes %}<h2>Notes</h2><ul>{% for note in plan.notes %}<li>{{ note }}</li>{% endfor %}</ul>{% endif %}
{% if errors %}<h2>Not priced</h2><ul>{% for option in errors %}<li>{{ option.name }}: {{ option.error }}</li>{% endfor %}</ul>{% endif %}
<h2>Cost against accuracy</h2>
<img alt="cost against accuracy" src="data:image/png;base64,{{ images.cost_accuracy }}">
<h2>Share on the device against system accuracy</h2>
<img alt="share on device against system accuracy" src="data:image/png;base64,{{ images.share_curves }}">
<h2>Variants</h2>
<table><tr><th>variant</th><th>format</th><th>mode</th><th>size</th><th>accuracy alone</th><th>model</th></tr>
{% for option in plan.options if option.device == plan.options[0].device %}<tr><td>{{ option.variant.name }}</td>
<td>{{ option.variant.format }}</td><td>{{ option.variant.mode }}</td><td>{{ sizes[option.variant.name] }}</td>
<td>{{ "%.2f%%"|format(option.variant.accuracy * 100) }}</td><td>{{ option.variant.model_path }}</td></tr>
{% endfor %}</table>
</body></html>
"""
