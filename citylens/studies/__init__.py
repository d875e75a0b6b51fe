"""Study files shipped with citylens (``demo.yaml``)."""
