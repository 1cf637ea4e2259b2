"""basicsr 1.4.2 only imports on today's torchvision after basicsr_taylor's compat fixes: load them first."""
import basicsr_taylor  # noqa: F401
