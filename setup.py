"""demandlake: mine e-commerce users' latent demand from their logs, at cluster scale."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


# The SQL endpoint's Python client (HiveServer2 protocol; pure Python, SASL PLAIN via pure-sasl).
SQL_CLIENT = ["pyhive==0.7.0", "thrift>=0.16", "thrift_sasl>=0.4.3", "pure-sasl>=0.6.2"]


def _requirements() -> list[str]:
    lines = (HERE / "requirements.txt").read_text().splitlines()
    reqs = [ln.split("#")[0].strip() for ln in lines]
    test_only = {"pytest", "chispa", "duckdb"}
    return [r for r in reqs if r and not any(r.startswith(t) for t in test_only)]


setup(
    name="demandlake",
    version="0.1.0",
    description="Latent-demand mining on Spark + Delta Lake, Horovod-trained Keras models, MLflow",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    package_dir={"": "lib"},
    # conf/ (defaults.yaml, linked from the top-level conf/) and templates/ (the run report's
    # Jinja2 templates, demandlake.report) hold only data: each is listed as a package of its own
    # so setuptools ships it without warning about a data-only folder; jvm/ holds the SQL
    # endpoint's read-only rule (Java source, compiled once into the cache by sql_endpoint).
    packages=find_packages("lib") + ["demandlake.conf", "demandlake.templates", "demandlake.jvm"],
    package_data={"demandlake": ["sql/*.sql"], "demandlake.conf": ["*.yaml"],
                  "demandlake.templates": ["*.html.j2"], "demandlake.jvm": ["*.java"]},
    include_package_data=True,
    install_requires=_requirements(),
    extras_require={
        "test": ["pytest>=8", "chispa==0.12.0"],
        "dev": ["pytest>=8", "chispa==0.12.0", "duckdb>=1.1"],
        # Horovod is built from source by scripts/bootstrap.sh (no wheels on PyPI); see docs/STACK.md.
        "horovod": ["horovod==0.28.1"],
        # `demandlake sql` through a running SQL endpoint, and the endpoint's tests (installed by
        # scripts/bootstrap.sh; without them `demandlake sql` starts a local Spark session).
        "sql": SQL_CLIENT,
    },
    entry_points={"console_scripts": ["demandlake=demandlake.cli:main"]},
)
