"""Entry module of the image build flow; the code is `ameide_migrate.flows.image`."""

from ameide_migrate.flows.image import ImageBuild, build_image_flow

__all__ = ["ImageBuild", "build_image_flow"]
