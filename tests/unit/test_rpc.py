"""rescue_worker.rpc: the messaging configuration a worker and a conductor
share."""

import pytest
from oslo_config import cfg

from rescue_worker import rpc


def messaging_conf(url, **rabbit):
    conf = cfg.ConfigOpts()
    rpc.register_messaging_opts(conf)
    conf([], default_config_files=[], default_config_dirs=[])
    conf.set_override('transport_url', url)
    for key, value in rabbit.items():
        conf.set_override(key, value, group='oslo_messaging_rabbit')
    return conf


def test_transient_rabbit_queues_are_a_risk_with_its_fix():
    risk = rpc.broker_restart_risk(
        messaging_conf('rabbit://u:p@broker:5672/'))

    assert 'RabbitMQ restart deletes the casts' in risk
    assert 'amqp_durable_queues = true' in risk
    assert 'rabbit_quorum_queue = true' in risk


@pytest.mark.parametrize('rabbit', [{'amqp_durable_queues': True},
                                    {'rabbit_quorum_queue': True}])
def test_durable_or_quorum_queues_outlive_a_restart(rabbit):
    conf = messaging_conf('rabbit://u:p@broker:5672/', **rabbit)

    assert rpc.broker_restart_risk(conf) is None


def test_other_drivers_are_not_judged():
    assert rpc.broker_restart_risk(messaging_conf('fake://')) is None


def test_notifications_have_a_driver_by_default():
    # oslo.messaging drops notifications without one, and they are how a
    # conductor learns every outcome.
    conf = messaging_conf('fake://')

    assert conf.oslo_messaging_notifications.driver == ['messagingv2']


def test_option_values_logged_at_debug_mask_every_secret(caplog):
    import logging
    conf = messaging_conf('rabbit://rescue:broker-secret@broker:5672/')
    conf.set_override('ssl_client_key_password', 'kafka-key-secret',
                      group='oslo_messaging_kafka')
    logger = logging.getLogger('test-option-values')

    with caplog.at_level(logging.DEBUG, logger='test-option-values'):
        conf.log_opt_values(logger, logging.DEBUG)

    assert 'ssl_client_key_password' in caplog.text
    assert 'kafka-key-secret' not in caplog.text
    assert 'broker-secret' not in caplog.text
