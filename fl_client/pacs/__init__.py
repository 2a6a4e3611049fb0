"""Pulling a site's protocol CT from the hospital PACS into an ingest inbox (docs/pacs.md).

Two routes to the same inbox: DICOM networking (C-FIND, then C-MOVE to the site's own storage SCP or
C-GET, with pynetdicom) and DICOMweb (QIDO-RS, WADO-RS, with dicomweb-client). The site's enrolment log
and CRF say which patients and which date windows (T0/T1/T2 of ``configs/study.yaml``); the PACS
addresses are site configuration (:mod:`fl_client.pacs.config`).
"""
