"""The issue's target for hostile inputs, the limits a case is judged by and the cases' sizes."""

MB = 1 << 20
RSS_LIMIT_MB = 1536.0  # 1.5 GB
SAME_FILM_MONTHS = 6.0  # an inverted or EXIF-rotated film must read this close to upright
HTTP_TIMEOUT_S = 180.0
CLI_TIMEOUT_S = 300.0
CONCURRENT_UPLOADS = 4  # films at the size limit sent at once (issue 22)
UPLOAD_MB = 300  # the chunked upload, against --max-upload-mb 1
DEFLATED_SIDE = 32768  # 32768 x 32768 8-bit pixels: 1 GiB once inflated
HUGE_SIDE = 60000  # TIFF/BMP/PGM headers: 3.6 gigapixels
TARGET = ("every case answered 4xx with a reason (or a correct reading), no 5xx, the server "
          "alive after all of them, peak RSS under 1.5 GB")
