"""Tests of the release path: the GitHub Actions workflows (.github/workflows, checked by actionlint and by
their pins and permissions) and the chart packaged the way the release workflow packages it."""
