"""Result fingerprints stay what they were: each configuration below, of the kind the benchmarks of RESULTS.md and
the demo run, gives the fingerprint recorded before locations were normalised (they are absolute paths, S3 URLs
and bundled names, which normalising leaves as they are), so the outputs they wrote still resume."""

import pytest

from priorflow.config import RunConfig

CONFIGS = {
    "demo": {"input": "/data/priorflow-demo/input.zarr", "output": "/data/priorflow-demo/sr_x4.zarr",
             "mode": "benchmark", "prior": "digits16",
             "operator": {"name": "super_resolution", "params": {"factor": 4, "method": "bicubic"}},
             "noise": {"name": "gaussian", "params": {"sigma": 0.05, "value_range": "0,1"}},
             "solver": {"name": "dmplug"}, "cluster": {"workers": 2}},
    "pipeline_dmplug": {"input": "/tmp/priorflow-bench-x/in.zarr", "output": "/tmp/priorflow-bench-x/out.zarr",
                        "mode": "benchmark", "operator": {"name": "super_resolution", "params": {"factor": 4}},
                        "noise": {"name": "gaussian", "params": {"sigma": 0.05, "value_range": "0,1"}},
                        "solver": {"name": "dmplug", "lr": 0.01, "max_iters": 600, "seed_on_sphere": False,
                                   "stopping": {"rule": "es_wmv", "window": 10, "patience": 200}},
                        "cluster": {"workers": 1}},
    "mpgd_auto_inpainting": {"input": "/data/in.zarr", "output": "/data/out.zarr",
                             "operator": {"name": "inpainting", "params": {"fraction": 0.7}},
                             "solver": {"name": "mpgd"}, "shard_size": 5, "seed": 7},
    "volumes_tiled_coupled": {"input": "/data/vols.zarr", "output": "/data/o.zarr", "layout": "volumes",
                              "mode": "benchmark",
                              "operator": {"name": "gaussian_blur", "params": {"kernel_size": 7, "sigma": 1.0}},
                              "tiling": {"overlap": 8, "window": "cosine"}, "coupling": {"weight": 0.3, "halo": 1},
                              "solver": {"name": "mpgd", "steps": 20}},
    "latent": {"input": "/data/in.zarr", "output": "/data/o.zarr", "prior": "digits16-latent", "mode": "benchmark",
               "operator": {"name": "super_resolution", "params": {"factor": 4}}, "solver": {"name": "mpgd_ldm"}},
    "projection": {"input": "s3://lab/scans.zarr", "output": "s3://lab/restored.zarr", "prior": "digits16",
                   "autoencoder": "digits16-ae", "operator": {"name": "super_resolution", "params": {"factor": 4}},
                   "solver": {"name": "mpgd_z", "window": [0.2, 0.6]}},
    "adm_folder": {"input": "/data/in.zarr", "output": "/data/o.zarr", "prior": "/priors/ffhq",
                   "operator": {"name": "ct", "params": {"angles": 8}}, "solver": {"name": "dps", "steps": 100},
                   "noise": {"name": "poisson", "params": {"rate": 25.0}}, "snapshots": 2},
    "warm_blind": {"input": "/data/in.zarr", "output": "/data/o.zarr",
                   "operator": {"name": "blind_blur", "params": {"kernel_size": 7}},
                   "solver": {"name": "dmplug_blind"}},
}

RECORDED = {
    "demo": "ba8a7b8d774b70070f6edf97dacba63d5a3df4ed29336ebd2852e69a755d3eb9",
    "pipeline_dmplug": "2556988c9ce3c86e91d51dff9a7ab3d8240c9cd7a49dadd3a60caa20fd92b95e",
    "mpgd_auto_inpainting": "40ffc6ccb0e679d0c5e876f6010920f503066c0b41ecf5909c3504eec9f5e725",
    "volumes_tiled_coupled": "38f288b60268660c331476d0932466e66ff5b8c4dba2ea8e6943b949104c61e0",
    "latent": "24e2a68e698cf5f003bca98d579997375f81a67c2c91b39fce643ce9605b3ee3",
    "projection": "eb779284af92f49b5d8221b447b68798071926416b04fda8f0a73f75a85d46aa",
    "adm_folder": "4f5b7b982e565427649fd47eeec56743c31e41b3d79b0b0b86e63f22ddd70a54",
    "warm_blind": "ffed32bbe7cc4b7b7009eee7d22c909782ecfade10a61e5957ed5a465a7c1ba2",
}
"""Computed by priorflow as it was before this test (git 2e41f3b), with the prior sha256 "ab" * 32."""


@pytest.mark.parametrize("name", CONFIGS)
def test_recorded_configurations_keep_their_fingerprints(name):
    config = RunConfig.model_validate(CONFIGS[name])
    assert config.result_fingerprint("ab" * 32) == RECORDED[name]
    assert config.located().result_fingerprint("ab" * 32) == RECORDED[name]  # as the shard tasks are given it
