"""The shipped sample configuration is what oslo-config-generator makes now."""

import os

from oslo_config import generator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
GENERATOR_CONF = os.path.join(ROOT, 'etc', 'oslo-config-generator',
                              'rescue-worker.conf')
SAMPLE = os.path.join(ROOT, 'etc', 'rescue-worker',
                      'rescue-worker.conf.sample')


def test_sample_config_is_current(tmp_path):
    fresh = tmp_path / 'rescue-worker.conf.sample'
    generator.main(['--config-file', GENERATOR_CONF,
                    '--output-file', str(fresh)])
    with open(SAMPLE) as f:
        shipped = f.read()
    assert fresh.read_text() == shipped, (
        'etc/rescue-worker/rescue-worker.conf.sample is stale: run '
        '"tox -e genconfig" and commit the result')


def test_sample_documents_every_contract_option():
    with open(SAMPLE) as f:
        sample = f.read()
    for name in ('node_id', 'topic', 'root_dir', 'state_dir',
                 'agent_token_file', 'allow_unauthenticated',
                 'require_hashed', 'hash_scheme', 'accepted_hash_schemes',
                 'username', 'sudo', 'steps', 'dhcp_backend', 'dhcp_timeout',
                 'skip_interfaces', 'skip_generated_mac', 'exit_after_rescue',
                 'scrub_paths', 'tenant_renew_interval',
                 'tenant_renew_period'):
        assert '\n#%s = ' % name in sample, name
    assert '\n#control_exchange = rescue_worker\n' in sample
    assert '\n#driver = messagingv2\n' in sample
