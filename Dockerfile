# The newsflow service image used by docker-compose.yml.

# Build stage: a wheel with the clustering hot path compiled by mypyc, as `make compiled`
# builds it (the full image has gcc and the Python headers; the slim one does not).
FROM python:3.11 AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY newsflow ./newsflow
COPY producers ./producers
COPY processors ./processors
COPY sinks ./sinks
RUN pip install --no-cache-dir 'setuptools>=77' 'mypy>=1.13' \
 && NEWSFLOW_MYPYC=1 pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/newsflow-*.whl)[postgres]" && rm -rf /wheels
COPY seeds ./seeds
COPY feeds.toml ./
RUN useradd --system --uid 10001 newsflow && mkdir -p /app/var && chown newsflow /app/var
USER newsflow
EXPOSE 8088
CMD ["newsflow", "run"]
