"""Report writers (Markdown, JSON, PNG charts) kept apart from the stages that compute the figures."""
