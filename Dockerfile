# The newsflow service image used by docker-compose.yml.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY newsflow ./newsflow
COPY producers ./producers
COPY processors ./processors
COPY sinks ./sinks
RUN pip install --no-cache-dir '.[postgres]'
COPY seeds ./seeds
COPY feeds.toml ./
RUN useradd --system --uid 10001 newsflow && mkdir -p /app/var && chown newsflow /app/var
USER newsflow
EXPOSE 8088
CMD ["newsflow", "run"]
