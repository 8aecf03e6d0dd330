"""A real PACS for tests: Debian's Orthanc (``orthanc``) with its DICOMweb plugin
(``orthanc-dicomweb``) on free 127.0.0.1 ports, in a temporary folder, with its own JSON
configuration. ``.ci/run`` installs both packages; where they are absent the tests skip."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from factories import free_ports

AE_TITLE = "ORTHANC"
PLUGIN_PLACES = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc", "/usr/lib/x86_64-linux-gnu/orthanc")


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or next(
        (p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if Path(p).is_file()), None)


def dicomweb_plugin() -> str | None:
    for place in PLUGIN_PLACES:
        for candidate in sorted(Path(place).glob("libOrthancDicomWeb.so*")):
            return str(candidate)
    return None


def missing() -> str | None:
    """Why Orthanc cannot run here (None when it can)."""
    if orthanc_binary() is None:
        return "Orthanc is not installed (Debian package orthanc; .ci/run installs it)"
    if dicomweb_plugin() is None:
        return "Orthanc's DICOMweb plugin is not installed (Debian package orthanc-dicomweb)"
    return None


class Orthanc:
    """One Orthanc process; ``modalities`` are the DICOM peers it may send to (name ->
    (AE title, host, port))."""

    def __init__(self, directory: Path, modalities: dict[str, tuple[str, str, int]]):
        import requests

        self.directory = directory
        self.dicom_port, self.http_port = free_ports(2)
        self.log = directory / "orthanc.log"
        (directory / "storage").mkdir(parents=True, exist_ok=True)
        self.config = directory / "orthanc.json"
        self.config.write_text(json.dumps({
            "Name": "boneage-test", "StorageDirectory": str(directory / "storage"),
            "IndexDirectory": str(directory / "storage"), "StorageCompression": False,
            "DicomAet": AE_TITLE, "DicomPort": self.dicom_port, "HttpPort": self.http_port,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": True, "DicomCheckCalledAet": False,
            "DicomModalities": {name: list(peer) for name, peer in modalities.items()},
            "Plugins": [dicomweb_plugin()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
            "ConcurrentJobs": 2, "SaveJobs": False, "HttpTimeout": 30, "StableAge": 1,
            # the node answers a C-STORE once it has read the film: seconds on a busy CI machine
            "DicomScuTimeout": 120,
        }, indent=2))
        self.process: subprocess.Popen | None = None
        self.session = requests.Session()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self, timeout: float = 30) -> None:
        import requests

        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(["nice", "-n", "19", orthanc_binary(),
                                             str(self.config)],
                                            stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.directory)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({self.process.returncode}): "
                                   + self.log.read_text()[-2000:])
            try:
                if self.session.get(f"{self.url}/system", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("Orthanc did not answer within "
                           f"{timeout:g} s: " + self.log.read_text()[-2000:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def get(self, path: str):
        answer = self.session.get(f"{self.url}{path}", timeout=30)
        answer.raise_for_status()
        return answer.json()

    def post(self, path: str, body):
        answer = self.session.post(f"{self.url}{path}", data=body if isinstance(body, bytes)
                                   else json.dumps(body), timeout=120)
        answer.raise_for_status()
        return answer.json() if answer.content else None

    def delete(self, path: str) -> None:
        self.session.delete(f"{self.url}{path}", timeout=30).raise_for_status()

    def upload(self, data: bytes) -> dict:
        """POST a DICOM file to /instances (as a modality's C-STORE would store it)."""
        return self.post("/instances", data)

    def file(self, instance: str) -> bytes:
        answer = self.session.get(f"{self.url}/instances/{instance}/file", timeout=30)
        answer.raise_for_status()
        return answer.content

    def study_instances(self, study_uid: str) -> list[dict]:
        """Every instance Orthanc holds in the study, with its main DICOM tags."""
        found = self.post("/tools/find", {"Level": "Instance", "Expand": True,
                                          "Query": {"StudyInstanceUID": study_uid}})
        return found

    def wait_for(self, study_uid: str, count: int, timeout: float = 180) -> list[dict]:
        """The study's instances once there are at least ``count`` of them."""
        deadline = time.monotonic() + timeout
        while True:
            instances = self.study_instances(study_uid)
            if len(instances) >= count or time.monotonic() > deadline:
                return instances
            time.sleep(0.2)
