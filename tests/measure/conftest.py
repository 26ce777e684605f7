"""The pipelines' coded, static and textured test videos, for the baseline loader's tests (which
check it against the DALI pipeline on the same videos)."""
from tests.pipelines.conftest import coded_list, coded_videos, static_videos, textured_videos  # noqa: F401 (fixtures)
