"""The password step: turn ``rescue_password`` into a crypt hash for shadow.

A plaintext password is hashed (``[rescue_worker] hash_scheme``); a
pre-hashed one (``hashed=True``) is vetted against ``accepted_hash_schemes``
and the cost caps, and passed on unchanged. The result goes to
``RescueState.password_hash`` / ``hash_scheme`` for the account step.

What a good password or hash is lives in ``rescue_worker.passwords``, which
the conductor side uses too; this step only applies the node's
configuration to it.
"""

from __future__ import annotations

import dataclasses

from rescue_worker import errors
from rescue_worker import passwords
from rescue_worker import pipeline


class PasswordStep(pipeline.Step):
    """Hash the plaintext password, or vet the pre-hashed one.

    Leaves the hash in ``state.password_hash`` and its scheme in
    ``state.hash_scheme`` for the account step.
    """

    name = 'password'

    def check(self, request: pipeline.RescueRequest
              ) -> pipeline.RescueRequest | None:
        """Refuse a password (or hash) that could never be used, and hash
        a plaintext one now, so that only the hash reaches the journal.

        Pure: reads the configuration only.
        """
        scheme = self._checked_scheme(request)
        if request.hashed or request.password_hash is not None:
            return None
        return dataclasses.replace(request, password_hash=(
            passwords.hash_password(request.rescue_password, scheme,
                                    caps=self._caps())))

    def run(self, request: pipeline.RescueRequest,
            state: pipeline.RescueState) -> str:
        # Checking again is cheap and keeps run() safe on its own.
        scheme = self._checked_scheme(request)
        state.hash_scheme = scheme
        if request.hashed:
            state.password_hash = request.rescue_password
            return 'accepted a %s hash' % scheme
        state.password_hash = request.password_hash or passwords.hash_password(
            request.rescue_password, scheme, caps=self._caps())
        return 'hashed with %s' % scheme

    def _caps(self) -> passwords.CostCaps:
        opts = self.conf.rescue_worker
        return passwords.CostCaps(sha_crypt_rounds=opts.max_sha_crypt_rounds,
                                  bcrypt_cost=opts.max_bcrypt_cost)

    def _checked_scheme(self, request: pipeline.RescueRequest) -> str:
        """The scheme the request's password is, or will be, hashed with."""
        opts = self.conf.rescue_worker
        if request.hashed:
            return passwords.identify_hash(request.rescue_password,
                                           opts.accepted_hash_schemes,
                                           self._caps())
        if opts.require_hashed:
            raise errors.RescueError(
                errors.PLAINTEXT_REFUSED,
                'this node refuses plaintext passwords ([rescue_worker] '
                'require_hashed = true); send the password hashed, with '
                'hashed=True (%s), or unset require_hashed on the node' %
                passwords.how_to_send(opts.accepted_hash_schemes))
        passwords.check_plaintext(request.rescue_password, opts.hash_scheme)
        return opts.hash_scheme
