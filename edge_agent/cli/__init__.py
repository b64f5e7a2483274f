"""Device-side commands (``edgeline agent``, ``edgeline predict``, ``edgeline verify``)."""
