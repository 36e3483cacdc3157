"""The cleaning station: the OHIF viewer served against a site's DICOMweb service.

* :mod:`~vhi.viewer.ohif` – the pinned OHIF build (``npm pack @ohif/app@3.13.2``,
  sha256-checked, unpacked under ``$VHI_CACHE/ohif``, never in the repository) and the
  ``app-config.js`` the platform writes for it (one DICOMweb data source at the same
  origin, SEGs saved as classic BINARY Segmentation Storage, no onboarding tour);
* :mod:`~vhi.viewer.server` – a loopback HTTP server: the OHIF files (single-page-app
  fallback), the written config, and a same-origin proxy of ``/dicom-web`` to the site's
  DICOMweb root that adds the site's credentials, so the browser needs none;
* :mod:`~vhi.viewer.station` – which sessions await cleaning and their viewer URLs;
* :mod:`~vhi.viewer.orthanc` – a real Orthanc on 127.0.0.1 (Debian ``orthanc`` and
  ``orthanc-dicomweb``) from the config template shipped beside it;
* :mod:`~vhi.viewer.local` – the station of a folder cohort (``vhi viewer --local``): its
  STIR and proposals loaded into its own Orthanc, the SEGs saved there written to the
  local source's cleaned paths.
"""
