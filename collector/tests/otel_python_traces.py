"""Send a trace (a server span with a child) and a log written inside it
to a Keel collector with the official OpenTelemetry Python SDK and its OTLP
exporters, unchanged (the server span links to a span of another trace;
the tracer has a version, the logger a name); print the trace id, and
the linked trace and span ids.

Usage: otel_python_traces.py http http://HOST:PORT
       otel_python_traces.py grpc HOST:PORT"""
import logging
import sys

from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

transport, target = sys.argv[1], sys.argv[2]
if transport == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    spans = OTLPSpanExporter(endpoint=target, insecure=True)
    logs = OTLPLogExporter(endpoint=target, insecure=True)
else:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    spans = OTLPSpanExporter(endpoint=target + "/v1/traces")
    logs = OTLPLogExporter(endpoint=target + "/v1/logs")

resource = Resource.create({"service.name": "py-" + transport, "host.name": "py-host"})
tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
logger_provider = LoggerProvider(resource=resource)
logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
log = logging.getLogger("shop")
log.setLevel(logging.INFO)
log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))

tracer = tracer_provider.get_tracer("keel-test", "1.2.3")
# A span of another trace that the checkout links to (the order it picks up).
with tracer.start_as_current_span("enqueue order", kind=SpanKind.PRODUCER) as producer:
    linked = producer.get_span_context()
link = trace.Link(linked, {"link.kind": "follows"})
with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER, links=[link]) as root:
    root.set_attribute("http.route", "/checkout")
    with tracer.start_as_current_span("charge card", kind=SpanKind.CLIENT) as child:
        child.set_status(Status(StatusCode.ERROR, "card declined"))
        log.error("payment failed", extra={"order_id": 42})
    trace_id = format(root.get_span_context().trace_id, "032x")

tracer_provider.force_flush()
logger_provider.force_flush()
tracer_provider.shutdown()
logger_provider.shutdown()
print(trace_id, format(linked.trace_id, "032x"), format(linked.span_id, "016x"))
