"""Virtual patients and devices that speak the public wire contract, for vendors, tests and benchmarks.

- cohort, covariates, truth (+ vancomycin_model, library_model, truth_models): virtual patients,
  their true parameters and latent trajectories, and the ground-truth file;
- biosensor, poc_meter, infusion_pump, pillbox: devices with their error models;
- faults, packing, outbox, uplink, runner, clock: the network side, in real or accelerated time;
- malformed, verdict, conformance: what the contract forbids and the check of a real device;
- cli: `mipd simulate` and `mipd conformance`.

Simulators import `wire` (and the `assimilation` model library), never ingest or the service.
"""
