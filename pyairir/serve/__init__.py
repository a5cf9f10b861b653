"""`pyairir serve`: restore photos in the browser, served by pyairir itself on this computer.

    from pyairir.serve import RestorationService, make_server

The page (page.html) uploads an image, optionally degrades it synthetically, and shows the
restoration beside the input with a slider, with progress, the time taken, PSNR/SSIM against a
clean image, SIPL's iterates and CPL's chosen prompts. Requests are restored one at a time
(jobs.py); the server (server.py) is Python's standard http.server, bound to 127.0.0.1 unless
told otherwise.
"""

from pyairir.serve.jobs import DEGRADATIONS, Job, RestorationService
from pyairir.serve.server import make_server

__all__ = ["DEGRADATIONS", "Job", "RestorationService", "make_server"]
