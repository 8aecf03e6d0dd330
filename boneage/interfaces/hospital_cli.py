"""The hospital commands of ``boneage``: ``dicom-node`` (a DICOM Storage SCP) and
``dicomweb`` (a DICOMweb worker). Registered by :func:`add_commands` from
:mod:`boneage.interfaces.cli`; the model is chosen there (``--model``, else its default)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def _ae_title(text: str) -> str:
    from boneage.interfaces.dicom_node import check_ae_title
    from boneage.kernel.errors import UsageError

    try:
        return check_ae_title(text, "AE title")
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port < 65536:
        raise argparse.ArgumentTypeError(f"port {port} is not 0-65535")
    return port


def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 4096:
        raise argparse.ArgumentTypeError(f"{text!r} MB: give a size above 0, at most 4096")
    return value


def _count(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of {what}, 1 to 64")
    return value


MAX_AUTO_WORKERS = 4  # --workers auto: one per core, at most this many (each loads the models)


def _workers(text: str) -> int:
    """``auto``: one reader process per core, at most MAX_AUTO_WORKERS; 1: the node's own."""
    if text == "auto":
        return max(1, min(os.cpu_count() or 1, MAX_AUTO_WORKERS))
    return _count(text, "processes")


def _associations(text: str) -> int:
    return _count(text, "associations")


def _model_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("--model", type=Path, action="append", metavar="DIR",
                         help="export directory; without one, the release that ships with "
                              "boneage (docs/release.md); several: an ensemble")
    command.add_argument("--fast", action="store_true",
                         help="read with the release's best single member")
    command.add_argument("--format", default="auto",
                         choices=["auto", "keras", "savedmodel", "tflite"],
                         help="which exported file to run (default auto: TFLite through "
                              "LiteRT where every model has one, else keras)")
    command.add_argument("--force", action="store_true",
                         help="read films the header or the film check refuses as not a "
                              "hand radiograph (the SR says so)")
    command.add_argument("--explain", action="store_true",
                         help="draw the Grad-CAM heatmap on the secondary capture")
    command.add_argument("--max-dataset-mb", type=_megabytes, default=256.0, metavar="MB",
                         help="largest data set read (default 256 MB)")


def add_commands(commands, verbose_flag) -> None:
    """Add ``dicom-node`` and ``dicomweb`` to the ``boneage`` command's subparsers."""
    node = commands.add_parser(
        "dicom-node", help="DICOM node: read hand films sent by C-STORE, send back SR + capture",
        description="A DICOM Storage SCP: each hand film it receives is read as `boneage "
                    "predict` reads it; a Comprehensive SR and a Secondary Capture go by "
                    "C-STORE to --destination, in the film's study (docs/hospital.md).")
    _model_flags(node)
    node.add_argument("--ae-title", type=_ae_title, default="BONEAGE",
                      help="this node's AE title (default BONEAGE)")
    node.add_argument("--host", default="127.0.0.1",
                      help="address to listen on (default 127.0.0.1; 0.0.0.0 for the network)")
    node.add_argument("--port", type=_port, default=11112, help="DICOM port (default 11112)")
    node.add_argument("--allow", type=_ae_title, action="append", default=[], metavar="AE",
                      help="a calling AE title allowed to associate (repeat; default: any)")
    node.add_argument("--destination", metavar="AE@HOST:PORT",
                      help="where the SR and capture are sent by C-STORE, e.g. "
                           "ORTHANC@127.0.0.1:4242")
    node.add_argument("--workers", type=_workers, default="auto", metavar="N",
                      help="processes that read films, each with its own models (default "
                           "auto: one per core, at most 4; 1: the node's own process)")
    node.add_argument("--send-associations", type=_associations, default=4, metavar="N",
                      help="associations sending results to --destination at once (default 4)")
    node.add_argument("--spool", type=Path, metavar="DIR",
                      help="write results that cannot be delivered here (default: logged only)")
    verbose_flag(node)
    node.set_defaults(handler=_dicom_node)

    web = commands.add_parser(
        "dicomweb", help="DICOMweb worker: find new hand films (QIDO-RS), read them (WADO-RS), "
                         "store SR + capture (STOW-RS)",
        description="Poll a PACS over DICOMweb for studies with CR/DX films, read each film "
                    "not yet answered as `boneage predict` does, and store a Comprehensive SR "
                    "and a Secondary Capture in its study (docs/hospital.md).")
    web.add_argument("--url", required=True,
                     help="the DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web")
    _model_flags(web)
    web.add_argument("--state", type=Path, default=Path("boneage-dicomweb.sqlite"),
                     help="file that records the films answered, so a restart neither skips "
                          "nor doubles one (default ./boneage-dicomweb.sqlite)")
    web.add_argument("--modality", action="append", metavar="CODE",
                     help="ModalitiesInStudy to search for (repeat; default CR and DX)")
    web.add_argument("--query", action="append", default=[], metavar="KEY=VALUE",
                     help="an extra QIDO-RS study filter, e.g. StudyDate=20240101- (repeat)")
    web.add_argument("--interval", type=float, default=30.0, metavar="SECONDS",
                     help="seconds between passes (default 30)")
    web.add_argument("--once", action="store_true", help="one pass, then exit")
    verbose_flag(web)
    web.set_defaults(handler=_dicomweb)


def _reader_spec(args: argparse.Namespace):
    """What reads: ``--model`` exports, else the shipped release (verified here, once: a
    missing or damaged release is one line at once, before TensorFlow or any worker loads)."""
    from boneage.learning.runtimes import resolve_format
    from boneage.reading.reader_pool import ReaderSpec
    from boneage.reading.release import check_model_choice, load_release

    choice = None
    if args.model:
        check_model_choice(args.model, args.fast)  # --fast does not apply to --model
    else:  # its sha256s are read here and nowhere after
        choice = load_release("fast" if args.fast else "ensemble")
    return ReaderSpec(model_dirs=tuple(args.model or ()), choice=choice,
                      model_format=resolve_format(args.model or choice.model_dirs, args.format),
                      force=getattr(args, "force", False), explain=args.explain,
                      max_dataset_bytes=int(getattr(args, "max_dataset_mb", 256.0) * 1024 * 1024),
                      verbose=args.verbose,
                      log_level=logging.getLevelName(logging.getLogger().getEffectiveLevel()))


def _reader(args: argparse.Namespace):
    """The node's reader: in this process, or ``--workers`` processes (each film's SR,
    capture and reading are pure Python: one process uses one core)."""
    spec = _reader_spec(args)
    workers = getattr(args, "workers", 1)
    if workers == 1:
        return spec.build()
    from boneage.reading.reader_pool import ReaderPool

    pool = ReaderPool(spec, workers)
    try:
        pool.start()  # every worker has its models before the node listens
    except BaseException:
        pool.close()
        raise
    return pool


def _dicom_node(args: argparse.Namespace) -> int:
    import signal
    import threading

    from boneage.interfaces.dicom_node import Destination, DicomNode, NodeSettings

    destination = Destination.parse(args.destination) if args.destination else None
    reader = _reader(args)
    settings = NodeSettings(ae_title=args.ae_title, host=args.host, port=args.port,
                            allowed_callers=tuple(args.allow), destination=destination,
                            spool=args.spool, send_associations=args.send_associations)
    node = DicomNode(reader, settings)
    node.start()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"boneage: DICOM node {args.ae_title} listening on {args.host}:{node.port}; "
          f"results to {destination or 'nowhere (no --destination)'}"
          + (f"; callers allowed: {', '.join(args.allow)}" if args.allow else "")
          + (f"; {args.workers} reader processes" if args.workers > 1 else ""), flush=True)
    stop.wait()
    print("boneage: stopping (sending what is queued)", flush=True)
    node.stop()
    if hasattr(reader, "close"):
        reader.close()
    print(f"boneage: {node.counters.to_dict()}", flush=True)
    return 0


def _query(items: list[str]) -> dict:
    from boneage.kernel.errors import UsageError

    query = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise UsageError(f"--query {item!r}: write KEY=VALUE, e.g. StudyDate=20240101-")
        query[key.strip()] = value.strip()
    return query


def _dicomweb(args: argparse.Namespace) -> int:
    import signal
    import threading

    from boneage.interfaces.dicomweb_worker import DEFAULT_MODALITIES, DicomwebWorker
    from boneage.kernel.errors import UsageError

    query = _query(args.query)
    if not args.url.startswith(("http://", "https://")):
        raise UsageError(f"--url {args.url!r}: give the DICOMweb root as http(s)://...")
    if not args.interval > 0:
        raise UsageError(f"--interval {args.interval}: give seconds above 0")
    reader = _reader(args)
    worker = DicomwebWorker(reader, args.url, args.state,
                            tuple(args.modality or DEFAULT_MODALITIES), query)
    if args.once:
        done = worker.run_once()
        print(f"boneage: {done.to_dict()}", flush=True)
        return 0 if not done.failed else 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"boneage: DICOMweb worker on {args.url}, every {args.interval:g} s; state in "
          f"{args.state}", flush=True)
    worker.run(args.interval, stop)
    return 0
