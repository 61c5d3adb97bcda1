FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY wire ./wire
COPY ingest ./ingest
COPY assimilation ./assimilation
COPY dosing_policy ./dosing_policy
COPY device_simulators ./device_simulators
COPY mipdstream ./mipdstream
RUN pip install --no-cache-dir .
ENV MIPD_DATA_DIR=/data
VOLUME /data
ENTRYPOINT ["mipd"]
CMD ["ingest"]
