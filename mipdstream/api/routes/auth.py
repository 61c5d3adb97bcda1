"""Log in (session tokens), log out, who am I; team admins manage their team's users and API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from mipdstream.api.auth import DB, SESSION_COOKIE, Admin, CurrentUser, Live, Role, _api_key, _bearer, _cookie, audit
from mipdstream.api.http_hardening import request_over_tls
from mipdstream.api.login_guard import LoginGuard
from mipdstream.api.problems import ProblemError, problem_responses
from mipdstream.service.state_db import ApiUser

router = APIRouter(prefix="/api/v1", tags=["auth"], responses=problem_responses(401, 403, 404, 409, 422))

NAME = r"^[A-Za-z0-9._@:-]{1,128}$"


class Login(BaseModel):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=256)


class UserOut(BaseModel):
    username: str
    role: Role
    team: str | None = None
    vendor: str | None = None


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the token expires.")
    user: UserOut


class UserIn(BaseModel):
    username: str = Field(pattern=NAME)
    password: str | None = Field(None, min_length=8, max_length=256, description="None: the user authenticates with API keys only.")
    role: Role = Field(description="clinician, team-admin or read-only (device-vendor users are provisioned by the operator).")


class ApiKey(BaseModel):
    username: str
    api_key: str = Field(description="Shown once; send it as the X-API-Key header.")


def user_out(user: ApiUser) -> UserOut:
    return UserOut(username=user.username, role=Role(user.role), team=user.team, vendor=user.vendor)


@router.post("/auth/token", response_model=Token, summary="Log in: a session token (also set as the dashboard cookie)",
             responses=problem_responses(429))
def login(body: Login, response: Response, request: Request, db: DB, live: Live) -> Token:
    guard: LoginGuard = request.app.state.login_guard
    client = request.client.host if request.client else "unknown"
    wait = guard.retry_after_s(body.username, client)
    if wait:
        raise ProblemError(429, f"too many failed logins; try again in {wait} s", {"Retry-After": str(wait)})
    user = db.check_password(body.username, body.password)
    if user is None:
        guard.failed(body.username, client)
        raise ProblemError(401, "unknown user or wrong password", {"WWW-Authenticate": "Bearer"})
    guard.succeeded(user.username)
    ttl = int(live.settings.api_session_ttl_s)
    token = db.issue_credential(user.username, "session", ttl_s=ttl)
    response.set_cookie(SESSION_COOKIE, token, max_age=ttl, httponly=True, samesite="strict",
                        secure=request_over_tls(request), path="/")
    audit(db, user, "login", "POST /api/v1/auth/token")
    return Token(access_token=token, expires_in=ttl, user=user_out(user))


@router.post("/auth/logout", status_code=204, summary="Revoke the presented session token or API key")
def logout(
    user: CurrentUser, db: DB, response: Response,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> None:
    for secret in (bearer.credentials if bearer else None, api_key, cookie):
        if secret:
            db.revoke_secret(secret)
    response.delete_cookie(SESSION_COOKIE, path="/")
    audit(db, user, "logout", "POST /api/v1/auth/logout")


@router.get("/auth/me", response_model=UserOut, summary="The authenticated user")
def me(user: CurrentUser) -> UserOut:
    return user_out(user)


@router.get("/users", response_model=list[UserOut], summary="Users of the admin's team")
def list_users(user: Admin, db: DB) -> list[UserOut]:
    return [user_out(u) for u in db.users(team=user.team)]


@router.post("/users", response_model=UserOut, status_code=201, summary="Create or update a user of the admin's team")
def create_user(body: UserIn, user: Admin, db: DB) -> UserOut:
    existing = db.user(body.username)
    if existing is not None and existing.team != user.team:
        raise ProblemError(409, f"user name {body.username!r} is taken")
    if body.role == Role.device_vendor:
        raise ProblemError(403, "device-vendor users are provisioned by the operator, not by a care team")
    created = db.add_user(body.username, body.password, body.role.value, user.team)
    audit(db, user, "create-user", "POST /api/v1/users", subject=body.username, role_granted=body.role.value)
    return user_out(created)


@router.post("/users/{username}/api-keys", response_model=ApiKey, status_code=201,
             summary="A new API key for yourself, or (team admin) for a user of your team")
def create_api_key(username: str, user: CurrentUser, db: DB) -> ApiKey:
    target = db.user(username)
    allowed = username == user.username or (user.role == Role.team_admin.value and target is not None and target.team == user.team)
    if target is None or not allowed:
        raise ProblemError(404, f"no user {username!r} you may issue keys for")
    key = db.issue_credential(username, "api_key", label=f"issued by {user.username}")
    audit(db, user, "create-api-key", f"POST /api/v1/users/{username}/api-keys", subject=username)
    return ApiKey(username=username, api_key=key)
