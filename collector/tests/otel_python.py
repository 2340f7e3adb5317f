"""Export metrics to a Keel collector with the official OpenTelemetry
Python SDK and its OTLP exporters, unchanged.

Usage: otel_python.py http http://HOST:PORT     (OTLP/HTTP protobuf)
       otel_python.py grpc HOST:PORT            (OTLP/gRPC, gzip)"""
import sys

from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

transport, target = sys.argv[1], sys.argv[2]
if transport == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression

    exporter = OTLPMetricExporter(endpoint=target, insecure=True, compression=Compression.Gzip)
else:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    exporter = OTLPMetricExporter(endpoint=target + "/v1/metrics")
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View

provider = MeterProvider(
    resource=Resource.create({"service.name": "py-shop", "service.instance.id": "py-1"}),
    metric_readers=[reader],
    # payload.size as an exponential histogram: a native histogram in Keel.
    views=[View(instrument_name="payload.size", aggregation=ExponentialBucketHistogramAggregation())],
)
meter = provider.get_meter("keel-test")
orders = meter.create_counter("orders.placed", unit="{order}")
latency = meter.create_histogram("checkout.duration", unit="s")
meter.create_observable_gauge("queue.depth", callbacks=[lambda _: [Observation(7, {"queue": "emails"})]])
payload = meter.create_histogram("payload.size", unit="By")
for v in (100, 200, 300, 400, 5000):
    payload.record(v, {"route": "/checkout"})
orders.add(5, {"region": "eu"})
orders.add(2, {"region": "us"})
for v in (0.003, 0.2, 0.4, 1.5):
    latency.record(v, {"route": "/checkout"})
# One more inside a sampled span: the SDK's default (trace-based) exemplar
# filter keeps it as an exemplar carrying the span's trace and span ids.
from opentelemetry.sdk.trace import TracerProvider

with TracerProvider().get_tracer("keel-test").start_as_current_span("checkout") as span:
    latency.record(7.0, {"route": "/checkout"})
    ctx = span.get_span_context()
    traced = (format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"))
if not provider.force_flush():
    sys.exit("flush failed")
provider.shutdown()
print("exported", *traced)
